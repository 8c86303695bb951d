"""Live: publishers push RTMP/SRT into ingest, which packages a real-time ABR ladder as LL-HLS."""
