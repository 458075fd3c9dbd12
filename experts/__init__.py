"""Built-in experts, one module per family; each registers through the entry-point group."""
