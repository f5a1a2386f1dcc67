"""Command line interface: one module per subcommand (thin wrappers over the library)."""
