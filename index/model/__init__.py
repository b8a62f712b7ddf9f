"""Everything that turns text into vectors: the sentence encoder and the token-level tutorial.

Owns: ``encoder.Encoder`` (layer −2 masked mean by default, the per-process
cache) and ``config.EncoderConfig`` (what an index records of its model);
``assemble`` (which runner serves a configuration) with ``auto``, ``choice``,
``measure`` and ``doctor`` (what ``--backend auto`` runs for bulk and for
queries on this CPU, and why), its runners
(``torch_runner`` with the lean ``bert`` pass, ``onnx_runner`` with
``onnx_export`` and ``model_cache``), ``loading``/``model_files`` (a model id
or folder, its fingerprint and limits), ``precision`` (bf16/int8 probes),
``pooling``, ``tokenizer`` with ``hangul`` and ``text`` (normalisation), and
``reference`` (the slow fp32 truth every fast path must reproduce). The token
level: ``token_model`` (all hidden states), ``words`` (tokens, token and word
vectors), ``contextual`` (similar words, layer reports) and ``plots``.

May import: the foundation modules of ``index`` (``errors``, ``options``,
``records``, ``files``) and nothing else of the package: no storage, no FAISS.
"""
