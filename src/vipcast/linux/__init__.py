"""Thin Linux adapters: raw sockets, AF_PACKET, UDP fast paths, netlink (pyroute2)."""
