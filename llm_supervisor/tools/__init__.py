"""Operator tools that need no daemon: advise, doctor, adopt, model bundles (models).
"""
