"""The daemon layer: wires the pure cores to the Linux adapters under asyncio."""
