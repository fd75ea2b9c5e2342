"""Custom layers of the swish example, registered under the package prefix "swishnet"."""
