"""Virtual sites in Linux network namespaces, for tests, benchmarks and the demo."""
