"""Shipped scenario files, installed as the package data of ``lab.shipped.scenarios``."""
