"""Pure protocol cores: bytes and ``now`` in, bytes and actions out.

Nothing under this package may import socket, asyncio, select or pyroute2;
``tests/unit/test_layering.py`` enforces it.
"""
