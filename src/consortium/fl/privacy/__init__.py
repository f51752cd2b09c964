"""Privacy for federated learning, pure and shared by the node, the hub and the simulator.

- :mod:`~consortium.fl.privacy.accountant`: epsilon spent and noise calibration with ``dp-accounting``;
- :mod:`~consortium.fl.privacy.dp_fedavg`: client-level clipping and Gaussian noise, per client and stacked;
- :mod:`~consortium.fl.privacy.adaptive_clip`: quantile-based adaptive clipping;
- :mod:`~consortium.fl.privacy.secagg`: SecAgg+ secure aggregation (quantisation, masks, Shamir shares and the
  client and server state machines).

docs/privacy.md states what each piece guarantees and under which threat model.
"""
