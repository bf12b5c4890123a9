"""Everything the frozen part of a network computes once and later runs reuse.

* :mod:`~headstart.caches.embeddings`: pooled features per backbone, cut and preprocessing, keyed by
  each example's content (feature extraction, the head warm-up, ``profile`` and ``rank``);
* :mod:`~headstart.caches.images`: decoded, presized images in memory-mapped shards (every epoch
  and every later run at that resolution reads the pixels back);
* :mod:`~headstart.caches.activations`: the output of a frozen bottom, kept in memory for one run
  when inputs do not change between epochs;
* :mod:`~headstart.caches.paths`: where caches live (``$HEADSTART_CACHE``, default ``~/.cache/headstart``).
"""
