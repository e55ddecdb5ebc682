# The local stand-in for MinIO (docker/local/compose.yml): s3s-fs, a
# file-backed S3 server that checks credentials, built on this machine
# (cargo install s3s-fs@0.14.1) and put on the local Debian base.
FROM quiver-local/debian:bookworm
COPY s3s-fs /usr/local/bin/s3s-fs
EXPOSE 9000
