"""Data pipeline: dataset layouts, song loading with an on-disk cache, splits, augmentation, crop sampling.

See docs/DESIGN.md ("Data API") for the contract. Modules:

* ``layouts``  which files are songs and which files, streams, channels hold which source (CCMixter,
               MUSDB18-HQ, MUSDB18 .stem.mp4, MIR-1K / iKala)
* ``splits``   train / valid / test of one corpus: auto, ``mir1k-standard``, split files
* ``cache``    the on-disk cache of decoded/resampled audio (memory-mapped: one copy per node) and the lock
               used to build cached corpora
* ``remote``   dataset roots given as URIs (s3://, gs://, file://, ...): copied to each node's cache once
* ``corpus``   ``Song``, ``load_song_folder``, ``load_splits`` (one or several corpora), ``prepare_corpora``,
               ``ensure_synthetic_corpus``
* ``augment``  source gains and pitch shift of one crop
* ``sampler``  ``CropSampler`` (training crops, corpus weights, remix across songs) and ``fixed_crops``
               (validation crops)
* ``synth``    the synthetic corpus generator
"""

from sepray.data.augment import NO_AUGMENT, PitchSegment, augment_crop
from sepray.data.cache import cache_root
from sepray.data.corpus import (
    Song,
    clear_memo,
    ensure_synthetic_corpus,
    load_song_folder,
    load_splits,
    prepare_corpora,
)
from sepray.data.layouts import DatasetError
from sepray.data.sampler import CropSampler, fixed_crops
from sepray.data.splits import assign_splits

__all__ = [
    "NO_AUGMENT",
    "CropSampler",
    "DatasetError",
    "PitchSegment",
    "Song",
    "assign_splits",
    "augment_crop",
    "cache_root",
    "clear_memo",
    "ensure_synthetic_corpus",
    "fixed_crops",
    "load_song_folder",
    "load_splits",
    "prepare_corpora",
]
