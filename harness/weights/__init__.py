"""Pretrained weights: the registry in conf/pretrained, the on-purpose download (`cxr-weights`), the
offline resolution of `train.weights=<registry name>` to a cached file, and the check that a
checkpoint file is in the format its framework reads."""
