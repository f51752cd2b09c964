"""SecAgg+ secure aggregation (Bell, Bonawitz, Gascón, Lepoint and Raykova, CCS 2020, on Bonawitz et al.,
CCS 2017), pure: no I/O, no clock. The server learns the sum of the surviving clients' quantised vectors and
nothing else about any one of them, while at least ``threshold`` clients stay at every stage.

- :mod:`.quantise`: fixed-point encoding of float vectors into the ring of integers modulo 2^32;
- :mod:`.masks`: X25519 key agreement, HKDF-SHA256 key derivation, ChaCha20 mask expansion, share encryption;
- :mod:`.shamir`: Shamir secret sharing of 32-byte secrets over the prime field of 2^521 - 1;
- :mod:`.graph`: the k-regular neighbour graph of SecAgg+ (or the complete graph of SecAgg);
- :mod:`.messages`: the round's configuration and every message, as strict, bounded pydantic models;
- :mod:`.client`, :mod:`.server`: the four stages (advertise keys, share keys, masked input, unmask);
- :mod:`.local`: one round run in memory, with dropouts (the simulator, the tests and the benchmark).
"""
