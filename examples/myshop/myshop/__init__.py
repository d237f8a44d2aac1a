"""myshop: the worked example of frappe_eda's README."""

__version__ = "0.0.1"
