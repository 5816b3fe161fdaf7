"""The data plane: relay, receiver and outbound, in a process of their own.

The election lives in the main process; the data plane's hot loops run here, in
a separate process with its own epoll loop, so relay load can never delay an
election timer (no shared GIL). The two talk over a SOCK_SEQPACKET pair.
"""
