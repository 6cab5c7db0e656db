// Independent check of a maskconver .tflite: the flatbuffers C++ Verifier (the check LiteRT's Java API
// runs before loading a model) on the model, then on its TFLITE_METADATA buffer. Built by the tests from
// code that flatc generates from tflite_model_subset.fbs and tflite_metadata_subset.fbs.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tflite_metadata_subset_generated.h"
#include "tflite_model_subset_generated.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s model.tflite\n", argv[0]);
    return 2;
  }
  std::ifstream in(argv[1], std::ios::binary);
  std::vector<uint8_t> buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  flatbuffers::Verifier model_verifier(buf.data(), buf.size());
  if (!tflite::VerifyModelBuffer(model_verifier)) {
    std::printf("model: INVALID\n");
    return 1;
  }
  const tflite::Model* model = tflite::GetModel(buf.data());
  std::printf("model: ok, %u buffers, %u subgraphs\n", model->buffers()->size(), model->subgraphs()->size());
  if (model->metadata() == nullptr) return 1;
  for (const tflite::Metadata* entry : *model->metadata()) {
    if (entry->name() == nullptr || entry->name()->str() != "TFLITE_METADATA") continue;
    const tflite::Buffer* b = model->buffers()->Get(entry->buffer());
    if (b->data() == nullptr) return 1;
    const uint8_t* data = b->data()->data();
    flatbuffers::Verifier md_verifier(data, b->data()->size());
    if (!tflite::VerifyModelMetadataBuffer(md_verifier)) {
      std::printf("metadata: INVALID\n");
      return 1;
    }
    const tflite::ModelMetadata* md = tflite::GetModelMetadata(data);
    std::printf("metadata: ok, name=%s, aligned16=%d\n", md->name()->c_str(),
                static_cast<int>((data - buf.data()) % 16 == 0));
    return 0;
  }
  std::printf("metadata: MISSING\n");
  return 1;
}
