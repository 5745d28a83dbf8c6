"""gensens: what predicts generalization in neural networks.

The package follows the workflow's stages: ``data`` (acquire and corrupt), ``models`` and
``train``, ``metrics`` (sensitivity indicators), ``aggregate``, ``stats`` and ``figures``.
``runtable`` turns a study's config into the runs the workflow trains.
"""

__version__ = "0.1.0"
