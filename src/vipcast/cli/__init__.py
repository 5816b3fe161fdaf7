"""The ``vipcast`` command line: one module per subcommand."""
