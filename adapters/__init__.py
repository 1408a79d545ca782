"""Platform adapters: one package per platform (a pure translation layer and an I/O layer)."""
