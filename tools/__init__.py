"""Developer tools: the MicroPython runtime host, emulators, benchmarks."""
