"""The shipped chains (YAML and Gadgetron XML), installed as the data package ``cmrecon_chains``.

``cmrecon.chain.definition.chains_dir`` finds this folder through the package, so a source
checkout, an editable install and a wheel all resolve chains the same way.
"""
