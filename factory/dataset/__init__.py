"""The data factory: samples → versioned, verifiable WebDataset shards (local or S3), on Ray or not.

Modules, in the order data flows:

* :mod:`.config` — the ``dataset`` config section (size, splits, shard size, fields, dtypes,
  compression, torch threads per worker).
* :mod:`.shards` — the shard plan (contiguous index ranges, one split per shard), sample encoding and
  :class:`~.shards.ShardBuilder`, which simulates (``factory.sample.simulate_sample``) and writes
  whole shards with a fixed mtime, temp name + commit, and a per-shard record.
* :mod:`.executor` — ``local`` (in-process loop) and ``ray`` (actor pool, bounded in-flight tasks)
  executors; both give byte-identical shards.
* :mod:`.generate` — :func:`~.generate.generate_dataset`: refuse to overwrite, resume, then
  ``index.parquet``, the card, ``wids.json`` and, last, ``manifest.json`` (the typed
  :class:`schemas.dataset.Manifest`).
* :mod:`.manifest` — safe reading for consumers: :func:`~.manifest.read_manifest`,
  :func:`~.manifest.iter_samples`.
* :mod:`.storage` — :class:`~.storage.Store`: a local path or ``s3://`` URL with its endpoint.
* :mod:`.tools` — verify, inspect, preview, publish; :mod:`.cli` — the ``simaq`` commands.
"""
