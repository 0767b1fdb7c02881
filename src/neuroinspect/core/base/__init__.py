"""The torch-free base: errors, configs, atomic files, metrics, typed records, versions, HTML helpers.

The command line's help and the report read these without importing torch.
"""
