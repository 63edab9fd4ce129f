#!/usr/bin/env python3
"""Writes the small seed corpora under fuzz/corpus/ from the fixtures (run from the repo root).

safetensors seeds keep each fixture file's first tensors (names, dtypes, ranks, metadata) with every
dimension cut to at most 3, so each seed is a valid file of a few hundred bytes; one seed keeps a
whole real header without its data. Index and config seeds are the fixtures' own JSON."""
import json, os, random, struct, glob

random.seed(1234)
FIX = 'tests/fixtures'
OUT = 'fuzz/corpus'
SIZES = {'BOOL': 1, 'U8': 1, 'I8': 1, 'U16': 2, 'I16': 2, 'F16': 2, 'BF16': 2, 'U32': 4, 'I32': 4,
         'F32': 4, 'U64': 8, 'I64': 8, 'F64': 8, 'F8_E4M3': 1, 'F8_E5M2': 1, 'F8_E8M0': 1}


def read_header(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        return json.loads(f.read(n)), n


def st_bytes(entries, meta):
    hdr, off, data = {}, 0, b''
    if meta is not None:
        hdr['__metadata__'] = meta
    for name, dt, shape in entries:
        numel = 1
        for d in shape:
            numel *= d
        nb = numel * SIZES[dt]
        hdr[name] = {'dtype': dt, 'shape': shape, 'data_offsets': [off, off + nb]}
        data += bytes(random.randrange(256) for _ in range(nb))
        off += nb
    h = json.dumps(hdr, separators=(',', ':')).encode()
    h += b' ' * (-len(h) % 8)  # pad like the reference writer
    return struct.pack('<Q', len(h)) + h + data


def write(kind, name, blob):
    os.makedirs(f'{OUT}/{kind}', exist_ok=True)
    with open(f'{OUT}/{kind}/{name}', 'wb') as f:
        f.write(blob)


def safetensors_seeds():
    files = sorted(glob.glob(f'{FIX}/*/*.safetensors'))
    for path in files:
        hdr, _ = read_header(path)
        meta = hdr.pop('__metadata__', None)
        if meta and len(json.dumps(meta)) > 600:  # golden's case table: keep a slice
            meta = {k: v[:200] for k, v in meta.items()}
        entries = [(k, v['dtype'], [min(d, 3) for d in v['shape']]) for k, v in list(hdr.items())[:10]]
        tag = path[len(FIX) + 1:].replace('/', '_').replace('.safetensors', '')
        write('fuzz_safetensors_header', tag, st_bytes(entries, meta))
    _, n = read_header(f'{FIX}/qwen3-moe-tiny/model.safetensors')
    with open(f'{FIX}/qwen3-moe-tiny/model.safetensors', 'rb') as f:
        write('fuzz_safetensors_header', 'qwen3_full_header_no_data', f.read(8 + n))
    write('fuzz_safetensors_header', 'empty', st_bytes([], None))
    write('fuzz_safetensors_header', 'scalar_and_empty',
          st_bytes([('s', 'F32', []), ('e', 'F16', [0, 4]), ('x', 'F8_E8M0', [2])], {'format': 'pt'}))


def index_seeds():
    with open(f'{FIX}/gpt-oss-tiny/model.safetensors.index.json', 'rb') as f:
        write('fuzz_index', 'gpt_oss_tiny', f.read())
    write('fuzz_index', 'small', json.dumps(
        {'metadata': {'total_size': 12}, 'weight_map': {'b': 's1.safetensors', 'a': 's0.safetensors',
                                                         'c': 's1.safetensors'}}).encode())


def config_seeds():
    for d in sorted(glob.glob(f'{FIX}/*-tiny')):
        with open(f'{d}/config.json', 'rb') as f:
            cfg = f.read()
        with open(f'{d}/generation_config.json', 'rb') as f:
            gen = f.read()
        write('fuzz_config', os.path.basename(d), cfg + b'\0' + gen)
    with open(f'{FIX}/qwen3_5-moe-tiny/config.json') as f:
        text = json.load(f)
    vl = {'model_type': 'qwen3_5_moe', 'text_config': text, 'tie_word_embeddings': False}
    write('fuzz_config', 'qwen3_5_vl', json.dumps(vl).encode())
    with open(f'{FIX}/qwen3-moe-tiny/config.json') as f:
        q = json.load(f)
    q.pop('rope_theta'); q.pop('rope_scaling'); q['num_local_experts'] = q.pop('num_experts')
    q['rope_parameters'] = {'rope_type': 'yarn', 'rope_theta': 1e6, 'factor': 4.0,
                            'original_max_position_embeddings': 8192}
    q['decoder_sparse_step'] = 2; q['mlp_only_layers'] = [0]
    write('fuzz_config', 'qwen3_v5_yarn', json.dumps(q).encode() + b'\0{"eos_token_id":[1,2],"top_k":5}')


safetensors_seeds()
index_seeds()
config_seeds()
