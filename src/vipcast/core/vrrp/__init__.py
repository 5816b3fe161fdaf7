"""VRRPv3 (RFC 9568): wire codec and the virtual-router state machine."""
