"""The recipe: its pydantic schema (schema.py, the one home of every default) and reading,
overriding and saving it as YAML (loader.py)."""
