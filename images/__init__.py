"""Image build contexts, installed as the package data of ``lab.shipped.images``."""
