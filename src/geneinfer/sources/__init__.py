"""geneinfer.sources"""
