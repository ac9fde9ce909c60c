"""The shipped weights (with sha256 sidecars), installed as the data package ``cmrecon_weights``.

``cmrecon.models.shipped.weights_dir`` finds this folder through the package, so a source
checkout, an editable install and a wheel all load weights the same way.
"""
