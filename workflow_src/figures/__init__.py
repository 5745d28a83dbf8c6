"""Stage 7: a study's figures. ``common`` saves them; one module per family of figures."""
