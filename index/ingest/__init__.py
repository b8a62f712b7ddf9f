"""From input files to encoded passages.

Owns: ``sources`` (files, folders, standard input, ``Document``), ``readers``
(one reader per format, ``ReadOptions``/``ReadReport``), ``passages`` (token
windows that fit the model, encoded in one length-sorted run) and ``engines``
(the seam that turns the writer's commit chunks into vectors; ``LocalEngine``
encodes in this process).

May import: the foundation modules of ``index`` and ``index.model``; nothing
from storage, vector search or scale-out.
"""
