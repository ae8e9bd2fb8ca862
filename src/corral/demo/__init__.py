"""The demo: a customer-support fleet of agents on the scripted model, through `kill -9` of a
worker (`corral demo`, `make demo`), and the order workflow of the first tour (`--order`).

No API key and no network are needed: the models are scripted (deterministic, and labelled so),
and the order system, refund ledger, payment provider and courier are local stand-ins.
"""
