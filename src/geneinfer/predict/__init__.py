"""geneinfer.predict"""
