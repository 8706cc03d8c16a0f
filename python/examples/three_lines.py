import nape
for r in nape.predict("tests/corpus/zoo"):
    print(f"{r['file']:<42} {r['prediction']:.4f}  in_domain {r['in_domain']:.2f}")
