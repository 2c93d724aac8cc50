# Vitis HLS: the engine top trilevel_engine (hls/engine: fetch, load, compute, store and the sequencer)
# -> build/hls/trilevel_engine, IP catalog export. Run: bash hls/run_hls.sh   (or: bash hls/run_hls.sh engine)
set top trilevel_engine
set sources {engine.cpp dma.cpp compute.cpp}
source hls/tcl/common.tcl
