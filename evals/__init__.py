"""tuneserve evals: suites, scorers, the async runner, comparison, reports and the regression gate."""
