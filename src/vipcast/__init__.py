"""vipcast: one floating address for a cluster, every datagram to every node."""

__version__ = "0.1.0"
