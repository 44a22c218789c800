"""Built-in tasks: prompts and programmatic rewards for demos, tests and benchmarks."""
