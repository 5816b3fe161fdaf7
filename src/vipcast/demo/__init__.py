"""``vipcast demo``: a virtual ATC site in network namespaces, radar data and a failover."""
