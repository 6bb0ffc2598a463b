"""geneinfer.genes"""
