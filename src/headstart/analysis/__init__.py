"""Measuring before training, from frozen features: what to reuse, from which network, how deep.

* :mod:`~headstart.analysis.probes`: ``profile``, a linear probe, LogME and the shift from the
  source's BatchNorm statistics at every block;
* :mod:`~headstart.analysis.transferability`: LogME, LEEP, NCE and H-scores of any (features, labels);
* :mod:`~headstart.analysis.ranking`: ``rank``, candidate backbones ordered by one of those scores;
* :mod:`~headstart.analysis.advisor`: ``advise``, the textbook 2x2 table (size x similarity) measured;
* :mod:`~headstart.analysis.lr_finder`: the learning-rate range test (``find_lr``).
"""
