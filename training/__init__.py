"""Pieces of train.py that are worth testing on their own: config handling and torch.distributed set-up."""
