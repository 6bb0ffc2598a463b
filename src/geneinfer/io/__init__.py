"""geneinfer.io"""
