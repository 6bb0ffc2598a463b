"""geneinfer.train"""
