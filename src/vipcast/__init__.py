"""vipcast: one floating address for a cluster, every datagram to every node."""

from vipcast.api import Message, Receiver, Sender

__version__ = "0.1.0"
__all__ = ["Message", "Receiver", "Sender", "__version__"]
