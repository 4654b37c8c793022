"""Programs built on tunring: the demo, the benchmarks, the tools behind the CLI."""
