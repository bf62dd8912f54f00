"""The one input stack, Study → tensors, for classification and segmentation items (preprocessing: MONAI's array
transforms' arithmetic without importing MONAI; augmentation: MONAI transforms).

- :mod:`.preprocess`: per image — intensity (``input.window`` presets :data:`~.preprocess.WINDOW_PRESETS`,
  percentile / min-max / z-score), ROI crop with padding, slice extraction, resize → items ``(C, *size)``;
- :mod:`.items`: every item of a cohort as in-memory tensors (:class:`~.items.ItemStore`), built once per run;
- :mod:`.seg_items`: the segmentation items (whole slices/volumes and their label maps);
- :mod:`.samplers`: per-epoch over/under-sampling, class-balanced batches, Siamese partners, imbalance generators;
- :mod:`.augment`: the seeded batch augmenter (flips, quarter turns, affine, intensity, noise), drawn per
  (seed, epoch, batch) so a resumed run sees the same batches;
- :mod:`.loaders`: item tensors → dict batches (DataLoaders for training and evaluation).
"""
