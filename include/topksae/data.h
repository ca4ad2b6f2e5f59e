// Sources of activation batches for training, evaluation and encoding. The trainer pulls fixed-size
// batches of rows [batch, d_in] (float32) from an ActivationSource; the synthetic source
// (synthetic.h) and the file sources (npy / safetensors / Arrow shards) implement it.
#pragma once
#include <cstdint>
#include <string>

struct CUstream_st;  // the CUDA runtime's stream (topksae::Stream, device.h; not included here)

namespace topksae {

class ActivationSource {
 public:
  virtual ~ActivationSource() = default;
  virtual int64_t d_in() const = 0;
  // Fills out [rows, d_in] with the next rows. Returns the number of rows written: `rows` while
  // data remains; fewer (possibly 0) at the end of a finite source. Throws Error on bad data.
  virtual int64_t next(float* out, int64_t rows) = 0;
  // Whether next_device() works: the source holds its rows on the GPU (the live stream's device
  // mixing buffer), so the CUDA trainer reads batches device to device instead of through the host.
  virtual bool serves_device() const { return false; }
  // next() into device memory out [rows, d_in], queued on `stream` (it need not have run on return).
  virtual int64_t next_device(float* /*out*/, int64_t /*rows*/, CUstream_st* /*stream*/) { return -1; }
  // An opaque position (JSON text) from which a new source on the same data resumes exactly,
  // for checkpoints; and the inverse. Sources that cannot resume throw Error in seek().
  virtual std::string position() const = 0;
  virtual void seek(const std::string& position) = 0;
  // A one-line human description ("synthetic(seed=1, d_in=64)", "3 npy shards in data/, 1.2M rows").
  virtual std::string describe() const = 0;
};

}  // namespace topksae
