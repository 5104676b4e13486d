"""Adapters at the edge: every AWS call of the suite goes through this package (boto3).

One module per concern: `client` (sessions, timeouts and what an AWS error means for the exit
code), `secretstore` (Secrets Manager and SSM Parameter Store as the env file's source). Steps
and tasks never call boto3 directly. The only difference between production and the tests is
`aws.endpoint_url` (moto, the AWS stand-in, in server mode on loopback).
"""
