"""Typed products: the frozen objects that flow between chain steps (one module per family).

A step declares at registration what it consumes and produces (:func:`cmrecon.chain.registry.register`);
a chain is checked for type flow when it is loaded. MRD items (``ismrmrd.Acquisition``,
``ismrmrd.Image``, ``ismrmrd.Waveform``) are products too: they enter and leave the chain.
"""
