"""Stage 7: a study's figures. ``catalogue`` lists them (what each reads, which options it
uses), ``job`` is what a figure rule's script runs, ``output`` writes and reuses them,
``common`` holds what the charts share; one module per family of charts."""
