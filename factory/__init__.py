"""SimAQ data factory: phantom → acquisition → reconstruction → sharded WebDataset.

The tree reads as the pipeline: :mod:`factory.tomo` (the tomography core), :mod:`factory.phantom`,
:mod:`factory.acquisition`, :mod:`factory.sample` (one sample's whole life), :mod:`factory.dataset`
(shards, manifest, Ray executor). Stage functions know nothing of Ray.
"""

__version__ = "0.1.0"
