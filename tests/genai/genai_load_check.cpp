/* Reads a moe2onnx output folder the way onnxruntime-genai does, with its own code: the config
 * parser (src/config.cpp, which throws on keys it does not know), the model-type lists
 * (src/models/model_type.h) and the sliding-window cache sizing (ComputeWindowedKvCacheSize from
 * src/models/windowed_kv_cache.cpp), all compiled from its sources by scripts/build_genai.sh.
 *
 *   genai_load_check MODEL_DIR NAMES_FILE
 *
 * NAMES_FILE lists the graph's inputs and outputs ("in NAME" / "out NAME" lines). Printed:
 *   type T model CLASS             the model class CreateModel (src/models/model.cpp) picks
 *   kv L CPU_LEN CUDA_LEN          the KV cache length each provider allocates for layer L
 *   state L                        a linear-attention layer whose conv/recurrent states it feeds
 * Exit 1 with one line on stderr when the runtime would refuse the folder or leave a graph input
 * unfed. The name matching below restates DefaultKeyValueCache / RecurrentState's rules
 * (src/models/kv_cache.cpp, recurrent_state.cpp), which need a whole session to run. */
#include "generators.h"
#include "models/model_type.h"
#include "device_type.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>

namespace Generators {
int ComputeWindowedKvCacheSize(DeviceType device_type, const Config::Model::Decoder &decoder,
                               const Config::Search &search, int max_length);
}

using Generators::Config;
using Generators::ModelType;

[[noreturn]] static void fail(const std::string &msg)
{
    std::cerr << "genai_load_check: " << msg << "\n";
    std::exit(1);
}

/* The order of CreateModel's tests; only a decoder-only text model fits a moe2onnx folder. */
static std::string model_class(const Config &c)
{
    const std::string &t = c.model.type;
    if (t == "lfm2")
        return "LFM2_Model";
    if (t == "gpt2")
        return "Gpt_Model";
    if (ModelType::IsLLM(t))
        return "DecoderOnly_Model";
    if (ModelType::IsRNNT(t) || ModelType::IsTDT(t) || ModelType::IsALM(t))
        return "speech model";
    if (ModelType::IsVLM(t))
        return "MultiModalLanguageModel (opens vision.filename)";
    if (ModelType::IsPipe(t))
        return "DecoderOnlyPipelineModel";
    if (ModelType::IsMMM(t))
        return "MultiModalLanguageModel";
    return "none (unknown model type)";
}

/* "past_key_values.%d.key" with layer L. */
static std::string compose(const std::string &tmpl, int L)
{
    auto p = tmpl.find("%d");
    return p == std::string::npos ? tmpl : tmpl.substr(0, p) + std::to_string(L) + tmpl.substr(p + 2);
}

/* Layer index when name fits tmpl's prefix and suffix around %d, else -1. */
static int layer_of(const std::string &tmpl, const std::string &name)
{
    auto p = tmpl.find("%d");
    if (p == std::string::npos)
        return -1;
    std::string pre = tmpl.substr(0, p), suf = tmpl.substr(p + 2);
    if (name.size() <= pre.size() + suf.size() || name.compare(0, pre.size(), pre) ||
        name.compare(name.size() - suf.size(), suf.size(), suf))
        return -1;
    std::string mid = name.substr(pre.size(), name.size() - pre.size() - suf.size());
    if (mid.find_first_not_of("0123456789") != std::string::npos)
        return -1;
    return std::stoi(mid);
}

/* RecurrentState: the KV template's last ".key" segment replaced by the state's name. */
static std::string derive(const std::string &kv_tmpl, const char *suffix)
{
    auto dot = kv_tmpl.rfind('.');
    return dot == std::string::npos ? "" : kv_tmpl.substr(0, dot + 1) + suffix;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        fail("usage: genai_load_check MODEL_DIR NAMES_FILE");
    std::set<std::string> ins, outs;
    std::ifstream names(argv[2]);
    for (std::string kind, name; names >> kind >> name;)
        (kind == "in" ? ins : outs).insert(name);
    if (ins.empty() || outs.empty())
        fail(std::string(argv[2]) + ": no graph input/output names");

    std::unique_ptr<Config> cfg;
    try {
        cfg = std::make_unique<Config>(fs::path(argv[1]), "");
    } catch (const std::exception &e) {
        fail(std::string("onnxruntime-genai refuses genai_config.json: ") + e.what());
    }
    const Config &c = *cfg;
    std::string cls = model_class(c);
    std::cout << "type " << c.model.type << " model " << cls << "\n";
    if (cls != "DecoderOnly_Model")
        fail("model.type \"" + c.model.type + "\" makes onnxruntime-genai build " + cls +
             ", not the text decoder");

    const auto &in = c.model.decoder.inputs;
    const auto &out = c.model.decoder.outputs;
    std::set<std::string> fed = {in.input_ids, in.attention_mask, in.position_ids};
    if (!outs.count(out.logits))
        fail("decoder.outputs.logits \"" + out.logits + "\" is not a graph output");

    std::vector<int> kv_layers;
    for (const auto &n : ins)
        if (int L = layer_of(in.past_key_names, n); L >= 0)
            kv_layers.push_back(L);
    std::sort(kv_layers.begin(), kv_layers.end());
    const int max_length = c.search.max_length;
    std::set<int> sliding;
    if (c.model.decoder.sliding_window)
        sliding.insert(c.model.decoder.sliding_window->layers.begin(),
                       c.model.decoder.sliding_window->layers.end());
    for (int L : kv_layers) {
        for (const auto *t : {&in.past_key_names, &in.past_value_names})
            if (!ins.count(compose(*t, L)))
                fail("layer " + std::to_string(L) + ": no graph input " + compose(*t, L));
        for (const auto *t : {&out.present_key_names, &out.present_value_names})
            if (!outs.count(compose(*t, L)))
                fail("layer " + std::to_string(L) + ": no graph output " + compose(*t, L));
        fed.insert(compose(in.past_key_names, L));
        fed.insert(compose(in.past_value_names, L));
        int len[2];
        Generators::DeviceType dev[2] = {Generators::DeviceType::CPU, Generators::DeviceType::CUDA};
        for (int d = 0; d < 2; d++) {
            int w = Generators::ComputeWindowedKvCacheSize(dev[d], c.model.decoder, c.search, max_length);
            len[d] = w > 0 && c.search.num_beams == 1 && sliding.count(L) ? w : max_length;
        }
        std::cout << "kv " << L << " " << len[0] << " " << len[1] << "\n";
    }

    std::string conv = derive(in.past_key_names, "conv_state");
    std::string rec = derive(in.past_key_names, "recurrent_state");
    std::string pconv = derive(out.present_key_names, "conv_state");
    std::string prec = derive(out.present_key_names, "recurrent_state");
    for (const auto &n : ins) {
        int L = layer_of(conv, n);
        if (L < 0)
            continue;
        if (!ins.count(compose(rec, L)) || !outs.count(compose(pconv, L)) ||
            !outs.count(compose(prec, L)))
            fail("layer " + std::to_string(L) + ": " + n + " without " + compose(rec, L) + ", " +
                 compose(pconv, L) + " and " + compose(prec, L));
        fed.insert(n);
        fed.insert(compose(rec, L));
        std::cout << "state " << L << "\n";
    }
    for (const auto &n : ins)
        if (!fed.count(n))
            fail("graph input \"" + n + "\" is fed by nothing in onnxruntime-genai");
    return 0;
}
