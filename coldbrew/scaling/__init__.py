"""The scaling core: every decision about execution environments, as pure code.

:mod:`.core` holds :class:`~coldbrew.scaling.core.ScalingCore`, a function of state, event and
time that returns actions; :mod:`.messages` its vocabulary; :mod:`.admission` and
:mod:`.keepalive` the rules it applies. The live server (:mod:`coldbrew.serving.pools`) and the
simulator (:mod:`coldbrew.simulate.engine`) both drive this one object.
"""
